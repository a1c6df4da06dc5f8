"""The local stack without Docker: real redis-server, tritonserver and the services as processes."""
