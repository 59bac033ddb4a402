from bridge import Bridge
from sample_wsgi_app import app

application = Bridge(app)
