"""Storage: the tables, the engine and its transactions, the migrations."""
