"""Data pipelines and jobs: raw click logs in, prepared session data out."""
