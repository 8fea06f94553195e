"""The Modbus source: link URLs (``links``), request planning (``plan``), register decoding
(``decode``) and the asyncio poller (``poller``). See README.md in this folder for every option."""
