"""Results files, tables and figures."""
