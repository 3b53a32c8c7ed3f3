"""The jobs above the ETL and the library: the nightly pipeline, batch recommendation,
tuning, model selection and the tracked training and evaluation runs they share. The
Typer commands (gru4rec.commands) call these; the library never imports them."""
