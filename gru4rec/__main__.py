"""`python -m gru4rec`: the same as the `gru4rec` command."""

from gru4rec.cli import app

app(prog_name="gru4rec")
