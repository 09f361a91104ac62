"""producer: a continuous synthetic event stream for every configured dataset."""
