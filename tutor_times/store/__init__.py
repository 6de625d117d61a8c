"""Where activities and sessions live: the SQL schema and the SQL every step shares, the
drivers, the Redis cache of open sessions, and the stored figures kept beside the sessions."""
