"""Contextualisation: each machine's user-data, rendered from its machinetype's templates.

``render.render_user_data`` is the entry point; ``sources`` finds and caches templates, ``multipart``
combines parts for cloud-init, ``proxy`` makes X.509 proxies, ``size`` fits user-data into a cloud's limit.
The shipped templates are in ``templates/``.
"""
