"""The server's own authorisation server: patient login, backend services, token issuing."""
