import { Injectable } from '@nestjs/common';
import { Task } from '../../lib';

/** Tasks for the result-size and unstorable-result tests: a small message whose result is as large as asked. */
@Injectable()
export class ResultTasks {
  @Task('tasks.bigResult')
  bigResult(bytes: number): string {
    return 'x'.repeat(bytes);
  }

  @Task('tasks.small')
  small(value: string): string {
    return value;
  }
}
