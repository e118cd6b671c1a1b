"""Pages: the report and the other HTML pages, rendered from results (they compute nothing)."""
