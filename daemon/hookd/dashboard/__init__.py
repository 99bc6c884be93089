"""The dashboard process (``hookd dashboard``): a page and read-only JSON panels over the database."""
