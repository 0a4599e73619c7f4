"""The walkthrough's task, for the benchmark's Celery worker and client."""
from celery import Celery

app = Celery('bench_tasks')
app.config_from_object('bench_celeryconfig')


@app.task(name='tasks.sortWords')
def sortWords(text, capitalize):
    sortedWords = sorted(text.split(' '), key=str.lower)
    if capitalize:
        return ' '.join([w.upper() for w in sortedWords])
    return ' '.join(sortedWords)
