"""Deployments: workflows deployed to an environment under an id, run by that id.

ComfyDeploy's production clients run deployments (``POST /run/deployment/queue`` with a
``deployment_id``) rather than sending graphs. Here live the workflow versions a deployment can
point at (:mod:`~comfyq.deployments.workflow_versions`), the registry of deployments and their
versions (:mod:`~comfyq.deployments.registry`) and ComfyDeploy's shapes for them
(:mod:`~comfyq.deployments.shapes`). :class:`comfyq.Client` runs them like any other run.
"""
