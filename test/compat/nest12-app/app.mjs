// An ESM application on NestJS 12 (ESM-only) using the packed nestjs-celery (CommonJS), which
// loads Nest 12 through Node's require(esm). Plain JavaScript, so decorators are applied by hand.
import 'reflect-metadata';
import { Injectable, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { CeleryModule, Producer, Task, TaskRegistry, AmqpBroker, MemoryBroker, Broker } from 'nestjs-celery';

class TasksService {
  sortWords(text, capitalize = false) {
    const sorted = text.split(' ').sort((a, b) => (a.toLowerCase() < b.toLowerCase() ? -1 : a.toLowerCase() > b.toLowerCase() ? 1 : 0));
    return (capitalize ? sorted.map((w) => w.toUpperCase()) : sorted).join(' ');
  }
}
Reflect.decorate([Task('tasks.sortWords')], TasksService.prototype, 'sortWords', Object.getOwnPropertyDescriptor(TasksService.prototype, 'sortWords'));
Reflect.decorate([Injectable()], TasksService);

const options = process.argv[2] ? JSON.parse(process.argv[2]) : {};
class AppModule {}
Reflect.decorate([Module({ imports: [CeleryModule.forRoot(options)], providers: [TasksService] })], AppModule);

const app = await NestFactory.createApplicationContext(AppModule, { logger: false });
const producer = app.get(Producer);
const sortWords = producer.task(TasksService, 'sortWords');
const first = await sortWords.delay('storage yay my DB is powerful results Astra', false);
const second = await sortWords.applyAsync(['In the land of another wizards day'], { kwargs: { capitalize: true } });
const broker = app.get(Broker);
console.log(JSON.stringify({
  nest: (await import('@nestjs/core/package.json', { with: { type: 'json' } })).default.version,
  broker: broker instanceof AmqpBroker ? 'amqp' : broker instanceof MemoryBroker ? 'memory' : 'other',
  tasks: app.get(TaskRegistry).names(),
  results: [await first.get({ timeout: 20000 }), await second.get({ timeout: 20000 })],
}));
await app.close();
