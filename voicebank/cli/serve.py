"""Commands for the HTTP service: serve, apikey."""
