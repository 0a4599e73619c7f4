"""The walkthrough's celeryconfig (Cassandra result backend), with addresses from the environment.

The NestJS side of the interop suite passes the same keys to CeleryModule.forRoot() as they are.
CELERY_EXTRA_CONFIG (JSON) adds or overrides settings (task_queues, task_routes, ...) for the
cells that need them; without it the settings are the walkthrough's.
"""
import json
import os

broker_url = os.environ.get('CELERY_BROKER_URL', 'amqp://guest:guest@127.0.0.1:5672//')
result_backend = 'cassandra://'
cassandra_servers = [os.environ.get('CASSANDRA_HOST', '127.0.0.1')]
cassandra_port = int(os.environ.get('CASSANDRA_PORT', '9042'))
cassandra_keyspace = os.environ.get('CASSANDRA_KEYSPACE', 'celery_test')
cassandra_table = os.environ.get('CASSANDRA_TABLE', 'celery_taskmeta')
cassandra_entry_ttl = 86400
cassandra_auth_provider = 'PlainTextAuthProvider'
cassandra_auth_kwargs = {'username': os.environ.get('CASSANDRA_USERNAME', 'cassandra'),
                         'password': os.environ.get('CASSANDRA_PASSWORD', 'cassandra')}
if os.environ.get('CASSANDRA_SECURE_BUNDLE'):
    # Astra DB: the bundle replaces the servers (exactly one of the two).
    cassandra_secure_bundle_path = os.environ['CASSANDRA_SECURE_BUNDLE']
    cassandra_servers = None
task_serializer = 'json'
result_serializer = 'json'
accept_content = ['json']
enable_utc = True
broker_connection_retry_on_startup = True
task_default_queue = os.environ.get('PY_QUEUE', 'celery')
task_track_started = True
worker_hijack_root_logger = False

if os.environ.get('CELERY_EXTRA_CONFIG'):
    globals().update(json.loads(os.environ['CELERY_EXTRA_CONFIG']))
