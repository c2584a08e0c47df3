"""Click commands of the ``suhmo`` CLI, one module each."""
