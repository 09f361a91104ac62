"""bronze_sink: lands every raw record of every dataset on the lake, as received."""
