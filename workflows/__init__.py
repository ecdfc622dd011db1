"""Argo Workflows for avatar-pipeline: the WorkflowTemplate built with Hera from the stage graph
(:mod:`workflows.build`), its settings (:mod:`workflows.settings`), the Argo Server client behind
``avatar submit|retry|status`` (:mod:`workflows.client`) and the cluster preflight behind
``avatar doctor`` (:mod:`workflows.doctor`)."""
