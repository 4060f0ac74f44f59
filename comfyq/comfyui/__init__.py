"""Running comfyq's runs on ComfyUI servers (ComfyUI 0.3.64's HTTP and websocket protocol).

* :mod:`.client`: HTTP requests to one server; :mod:`.events`: its websocket, read by a thread.
* :mod:`.backend`: :class:`~.backend.ComfyUIBackend`, the ``GraphBackend`` that posts a run's
  prompt, follows its events, handles cancel, timeouts and lost servers, and fetches outputs
  (:mod:`.outputs`) after preparing the prompt (:mod:`.prepare`).
* :mod:`.errors`: failures reported with ComfyUI's details.
* :mod:`.launcher`: one server per device for ``comfyq worker`` (``--comfyui-url``,
  ``--comfyui-path``); :mod:`.catalog`: the server's ``/object_info`` as the worker's catalog.
"""
