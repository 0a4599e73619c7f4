"""The walkthrough's celeryconfig for the benchmark: RabbitMQ broker, Cassandra result backend with
PlainTextAuthProvider (cassandra / cassandra), JSON. Addresses, table and queue from the environment.

Differences from the interop suite's config, so that Celery does the same work as the other systems:
- task_acks_late: the message is acknowledged after the task ran and its result was stored
  (Celery's default acknowledges before running the task);
- no task_track_started (it would write a second, STARTED row per task) and no cassandra_entry_ttl.
"""
import os

broker_url = os.environ.get('CELERY_BROKER_URL', 'amqp://guest:guest@127.0.0.1:5672//')
result_backend = 'cassandra://'
cassandra_servers = [os.environ.get('CASSANDRA_HOST', '127.0.0.1')]
cassandra_port = int(os.environ.get('CASSANDRA_PORT', '9042'))
cassandra_keyspace = os.environ.get('CASSANDRA_KEYSPACE', 'celery_test')
cassandra_table = os.environ.get('CASSANDRA_TABLE', 'bench_celery')
cassandra_read_consistency = 'LOCAL_QUORUM'
cassandra_write_consistency = 'LOCAL_QUORUM'
cassandra_auth_provider = 'PlainTextAuthProvider'
cassandra_auth_kwargs = {'username': os.environ.get('CASSANDRA_USERNAME', 'cassandra'),
                         'password': os.environ.get('CASSANDRA_PASSWORD', 'cassandra')}
task_serializer = 'json'
result_serializer = 'json'
accept_content = ['json']
enable_utc = True
broker_connection_retry_on_startup = True
task_default_queue = os.environ.get('BENCH_QUEUE', 'bench_celery')
task_acks_late = True
worker_concurrency = int(os.environ.get('BENCH_CONCURRENCY', '2'))
worker_prefetch_multiplier = int(os.environ.get('BENCH_PREFETCH_MULTIPLIER', '4'))
