import { Injectable } from '@nestjs/common';
import { LamportClock } from '../protocol/events';

/**
 * The module's Lamport clock (Celery's `app.clock`), shared by the worker's events, the Producer's
 * `task-sent` and remote control: `forward()` for each event or control message sent,
 * `adjust(clock)` for each one received with a clock.
 */
@Injectable()
export class CeleryClock extends LamportClock {
  constructor() {
    super(0);
  }
}
