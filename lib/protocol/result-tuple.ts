/**
 * Celery's result tuples (`AsyncResult.as_tuple()` / `GroupResult.as_tuple()`, read back by
 * `celery.result.result_from_tuple`), as JSON puts them in a row's `children` column:
 * a task is `[[id, parent_tuple_or_null], null]`, a group `[[group_id, parent], [child tuples...]]`.
 */
export interface ResultTuple {
  id: string;
  /** The parent's tuple when the writer knew it (a chain step's handle), else null. */
  parent: ResultTuple | null;
  /** A group's members; null for a single task. */
  results: ResultTuple[] | null;
}

/**
 * Reads one tuple as `result_from_tuple` does: the head is `[id, parent]` or a bare id, the tail
 * null (a task) or a list (a group). Throws a TypeError saying what is wrong with anything else.
 */
export function parseResultTuple(value: unknown, where = 'result tuple'): ResultTuple {
  if (!Array.isArray(value) || value.length !== 2) throw new TypeError(`${where}: expected [[id, parent], null | [members]], got ${describe(value)}`);
  const [head, nodes] = value as [unknown, unknown];
  let id: unknown = head;
  let parent: unknown = null;
  if (Array.isArray(head)) {
    if (head.length !== 2) throw new TypeError(`${where}: expected [id, parent] as its head, got ${describe(head)}`);
    [id, parent] = head;
  }
  if (typeof id !== 'string' || !id) throw new TypeError(`${where}: the id is not a non-empty string (${describe(id)})`);
  if (nodes !== null && !Array.isArray(nodes)) throw new TypeError(`${where}: the members of ${id} are neither null nor a list (${describe(nodes)})`);
  return {
    id,
    parent: parent === null || parent === undefined ? null : parseResultTuple(parent, `parent of ${id}`),
    results: nodes === null ? null : nodes.map((node, i) => parseResultTuple(node, `member ${i} of group ${id}`)),
  };
}

/**
 * A `children` column: a list of tuples. Null stays null (Celery stores null when there was no
 * request, e.g. a revoke from the control command); Python's `AsyncResult.children` is None then.
 */
export function parseChildren(value: unknown, taskId: string): ResultTuple[] | null {
  if (value === null || value === undefined) return null;
  if (!Array.isArray(value)) throw new TypeError(`task ${taskId}: children is not a list of result tuples (${describe(value)})`);
  return value.map((child, i) => parseResultTuple(child, `task ${taskId}: child ${i}`));
}

function describe(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}
