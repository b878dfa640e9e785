"""The web page (``worker serve``): ``app.py`` its API, ``static/`` the page itself."""
