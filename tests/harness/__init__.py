"""One harness for real processes on loopback, shared by the integration tests and bench/.

- `processes`: a group of processes with their logs, and how to start each kind (Daphne, a
  Celery worker or beat, a private redis-server) with the command line production uses.
- `services`: the machine's PostgreSQL and Redis (a throwaway database, a claimed Redis index).
- `nginx`: the repository's nginx.conf pointed at loopback replicas, and nginx itself.
- `topology`: the production topology (nginx → N Daphne → Redis ← Celery, PostgreSQL) in one
  call, with its parts killed and restarted by role.
- `client`: the WebSocket client that follows replies by seq as the page does.
- `sockets`: plain sockets read frame by frame, a browser-like sign-in, sockets in batches.
- `embedded`: one Daphne in embedded mode with an API key, for HTTP API and SDK tests.

Every process gets an explicit environment (the developer's own never leaks in), and every
wait is for an event (a port answering, a log line) with a generous deadline.
"""
