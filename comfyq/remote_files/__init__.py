"""Files a run takes by URL (ComfyDeploy's file, LoRA and checkpoint inputs), fetched on the
worker that executes it.

- **Guarded**: a URL is fetched only where a webhook may be sent (:mod:`comfyq.webhooks.safety`:
  public addresses, plus ``COMFYQ_WEBHOOK_ALLOW_*`` and ``COMFYQ_WEBHOOK_ALLOWED_NETWORKS``), each
  connection checked before it is made, redirects included. URLs of the configured bucket (its
  endpoint or public base URL) are allowed even where that address is private or loopback.
  ``file://`` URLs are read only inside ``COMFYQ_DATA_DIR/uploads`` (uploads kept by an API on
  this host with local storage).
- **Limited**: ``COMFYQ_INPUT_MAX_BYTES`` (the declared length first, then counted as it
  arrives) and ``COMFYQ_INPUT_FETCH_TIMEOUT_SECONDS`` in total.
- **Checked**: an image must decode; a LoRA or checkpoint must be a safetensors file (a pickled
  ``.ckpt`` can run code when loaded).
- **Cached per host** under ``COMFYQ_DATA_DIR/input-cache``, keyed by URL (for the bucket's own
  presigned URLs, by the object: a re-signed URL of the same object is a hit).
"""

from comfyq.remote_files.fetch import InputFetchError, fetch_input

__all__ = ["InputFetchError", "fetch_input"]
