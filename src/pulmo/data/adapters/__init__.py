"""One module per source format; each returns records of the common layout."""
