"""The medical question-answering service that calls kgverify as a sidecar."""
