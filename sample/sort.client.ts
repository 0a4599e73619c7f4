import { Injectable } from '@nestjs/common';
import { CassandraResultStore, MemoryResultStore, Producer, ResultRow, ResultStore } from '../lib';
import { TasksService } from './tasks.service';

/** The walkthrough's client steps: send two tasks, check `ready()`, print the results and the rows. */
@Injectable()
export class SortClient {
  constructor(
    private readonly producer: Producer,
    private readonly results: ResultStore,
  ) {}

  async run(print: (line: string) => void): Promise<string[]> {
    const sortWords = this.producer.task(TasksService, 'sortWords');
    const first = await sortWords.delay('storage yay my DB is powerful results Astra', false);
    print(`sent tasks.sortWords[${first.id}]; ready: ${await first.ready()}`);
    const second = await sortWords.applyAsync(['In the land of another wizards day'], { kwargs: { capitalize: true } });
    print(`sent tasks.sortWords[${second.id}] with kwargs {capitalize: true}; ready: ${await second.ready()}`);
    const values = [await first.get({ timeout: 30000 }), await second.get({ timeout: 30000 })];
    print(`ready: ${await first.ready()}, ${await second.ready()}`);
    for (const value of values) print(value);
    return values;
  }

  /** The rows of the result table, like the walkthrough's `SELECT * FROM ...` step. */
  async rows(): Promise<ResultRow[]> {
    if (this.results instanceof CassandraResultStore) return this.results.rows(100);
    if (this.results instanceof MemoryResultStore) return this.results.allRows();
    return [];
  }
}

export function formatRow(row: ResultRow): string {
  return [
    row.taskId,
    row.status,
    row.result.toString('utf8'),
    row.dateDone.toISOString(),
    row.traceback.toString('utf8'),
    row.children.toString('utf8'),
  ].join(' | ');
}
