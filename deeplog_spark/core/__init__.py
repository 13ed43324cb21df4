"""What every stage shares: config, the Spark session builder, Delta table I/O, the run store,
table names and schemas, errors, logging and progress."""
