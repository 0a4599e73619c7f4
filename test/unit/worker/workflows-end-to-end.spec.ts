import { Test, TestingModule } from '@nestjs/testing';
import { CeleryModule, Producer } from '../../../lib';
import { TasksService } from '../../../sample/tasks.service';

/** Both sides together on the embedded transports: workflows from our Producer, run by our worker. */
describe('workflows end to end (memory://): Producer → NestJS worker', () => {
  let moduleRef: TestingModule;
  let producer: Producer;

  beforeEach(async () => {
    moduleRef = await Test.createTestingModule({ imports: [CeleryModule.forRoot({ resultPollIntervalMs: 5 })], providers: [TasksService] }).compile();
    await moduleRef.init();
    producer = moduleRef.get(Producer);
  });

  afterEach(async () => {
    await moduleRef.close();
  });

  it('a chain of sample tasks: the last step holds the final value', async () => {
    const result = await producer.chain(producer.signature(TasksService, 'add', [1, 2]), producer.signature(TasksService, 'add', [10]), producer.signature(TasksService, 'add', [100]));
    await expect(result.get({ timeout: 3000 })).resolves.toBe(113);
  });

  it('a chord of sample tasks with tasks.tsum as body: completed by the worker\'s celery.chord_unlock', async () => {
    const result = await producer.chord([1, 2, 3].map((i) => producer.signature(TasksService, 'add', [i, i])), producer.signature(TasksService, 'tsum', []), { interval: 0.05 });
    await expect(result.get({ timeout: 5000 })).resolves.toBe(12);
  });
});
