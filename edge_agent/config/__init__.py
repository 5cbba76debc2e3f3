"""site.yaml and policy.yaml: models, YAML marks, error translation, protocol-neutral checks, JSON Schema."""
