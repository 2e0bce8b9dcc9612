"""Asset modules, one package per group."""
