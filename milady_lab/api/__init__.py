"""The API's one typed contract: request bodies (``bodies``), records and answers
(``records``), the route table (``routes``) and the ``openapi.json`` generated from them
(``openapi``). The server, the clients, the CLI and the widgets all take their shapes
from here."""
