"""Test helpers that are real programs: a stand-in ComfyUI server speaking ComfyUI's protocol.

:mod:`comfyq.testing.comfyui_standin` serves ComfyUI 0.3.64's HTTP and websocket protocol on
loopback and executes graphs with comfyq's in-process executor, with fault-injection knobs, so
comfyq's ComfyUI backend can be tested without ComfyUI, torch or a GPU.
"""
