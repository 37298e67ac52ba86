"""Provider webhooks: verify -> record -> parse -> act -> answer, one module per provider."""
