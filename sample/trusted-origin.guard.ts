import { CanActivate, ExecutionContext, Injectable } from '@nestjs/common';
import { CeleryContextType, CeleryExecutionContext } from '../lib';

/**
 * Refuses tasks sent from an untrusted origin: the message's `origin` header (`gen<pid>@<host>`)
 * or its host is in the list. A refused task is a FAILURE `PermissionError` (Python's `get()`
 * raises it). With an empty list every task runs.
 */
@Injectable()
export class TrustedOriginGuard implements CanActivate {
  constructor(private readonly untrusted: readonly string[]) {}

  canActivate(context: ExecutionContext): boolean {
    if (context.getType<CeleryContextType>() !== 'celery' || this.untrusted.length === 0) return true;
    const origin = CeleryExecutionContext.create(context).getTask().origin;
    if (origin === null) return true;
    const host = origin.slice(origin.indexOf('@') + 1);
    return !this.untrusted.includes(origin) && !this.untrusted.includes(host);
  }
}
