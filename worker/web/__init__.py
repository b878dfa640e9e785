"""The web page (``worker serve``): ``app.py`` its API, made of the routes in ``*_api.py``;
``static/`` the page itself."""
