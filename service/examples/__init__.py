"""Example connection requests, shipped with the package: the OpenAPI document's request
examples (what Swagger UI's "Try it out" starts from), the README's commands and the tests.
`examples/requests` in the repository links here."""
