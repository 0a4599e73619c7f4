import { redactUrl } from '../../../lib/broker/redact-url';

describe('redactUrl', () => {
  it('masks the password of an AMQP URL and keeps user, host, port and vhost', () => {
    expect(redactUrl('amqp://guest:guest@localhost:5672//')).toBe('amqp://guest:****@localhost:5672//');
    expect(redactUrl('amqp://celery:s3cret@rabbit.internal:5672/prod')).toBe('amqp://celery:****@rabbit.internal:5672/prod');
  });

  it('masks the password for amqps, pyamqp and an upper-case scheme', () => {
    expect(redactUrl('amqps://u:p@h:5671/v')).toBe('amqps://u:****@h:5671/v');
    expect(redactUrl('pyamqp://u:p@h//')).toBe('pyamqp://u:****@h//');
    expect(redactUrl('AMQP://u:p@h')).toBe('AMQP://u:****@h');
  });

  it('masks the password when the username is empty', () => {
    expect(redactUrl('amqp://:secret@h/')).toBe('amqp://:****@h/');
  });

  it('masks a percent-encoded password completely', () => {
    expect(redactUrl('amqp://u:p%40ss%2Fw0rd@h/')).toBe('amqp://u:****@h/');
  });

  it('keeps the query string after the host', () => {
    expect(redactUrl('amqp://u:p@h/v?heartbeat=30&frameMax=8192')).toBe('amqp://u:****@h/v?heartbeat=30&frameMax=8192');
  });

  it('leaves a URL without a password unchanged', () => {
    expect(redactUrl('amqp://guest@localhost//')).toBe('amqp://guest@localhost//');
    expect(redactUrl('amqp://localhost')).toBe('amqp://localhost');
    expect(redactUrl('memory://')).toBe('memory://');
  });

  it('does not mistake a port for a password', () => {
    expect(redactUrl('amqp://rabbit:5672/vhost')).toBe('amqp://rabbit:5672/vhost');
    expect(redactUrl('amqp://rabbit:5672/path@x')).toBe('amqp://rabbit:5672/path@x');
  });

  it('does not treat an @ in the query string as user info', () => {
    expect(redactUrl('amqp://h/v?client=a:b@c')).toBe('amqp://h/v?client=a:b@c');
  });

  it('masks all of a password containing a raw @ (amqplib, via WHATWG URL, connects with password "p@ss")', () => {
    expect(redactUrl('amqp://user:p@ss@host:5672/vh')).toBe('amqp://user:****@host:5672/vh');
  });

  it.each(['pa#ss', 'pa?ss', 'pa/ss'])('never shows a password containing a raw delimiter (%s)', (password) => {
    expect(redactUrl(`amqp://user:${password}@host/`)).not.toContain(password);
  });
});
