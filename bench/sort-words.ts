/**
 * The benchmark's task on its own, without the benchmark's service clients, so that a worker thread
 * loading it (bench/isolated-tasks.ts) pays only for what a task module needs.
 */

/** The walkthrough's call: `sortWords('storage yay my DB is powerful results Astra', False)`. */
export const WALKTHROUGH_TEXT = 'storage yay my DB is powerful results Astra';
export const TASK_NAME = 'tasks.sortWords';

/** The task itself, as Celery's walkthrough writes it (Python's `sorted(key=str.lower)`: code point order). */
export function sortWords(text: string, capitalize = false): string {
  const sorted = text.split(' ').sort((a, b) => {
    const x = a.toLowerCase();
    const y = b.toLowerCase();
    return x < y ? -1 : x > y ? 1 : 0;
  });
  return (capitalize ? sorted.map((w) => w.toUpperCase()) : sorted).join(' ');
}
