/**
 * prom-client and @nestjs/terminus are optional peers: `import 'nestjs-celery'` and a module with
 * metrics off must never load them. Each is replaced by a module that throws when loaded.
 */
describe('optional peers (prom-client, @nestjs/terminus)', () => {
  const loaded: string[] = [];
  beforeEach(() => {
    loaded.length = 0;
    jest.resetModules();
    jest.doMock('prom-client', () => {
      loaded.push('prom-client');
      throw Object.assign(new Error("Cannot find module 'prom-client' from 'lib/metrics/prometheus-metrics.ts'"), { code: 'MODULE_NOT_FOUND' });
    });
    jest.doMock('@nestjs/terminus', () => {
      loaded.push('@nestjs/terminus');
      throw new Error('@nestjs/terminus loaded');
    });
  });
  afterEach(() => {
    jest.dontMock('prom-client');
    jest.dontMock('@nestjs/terminus');
  });

  /* eslint-disable @typescript-eslint/no-require-imports */
  it('the main entry and a module with metrics off (health included) load neither', async () => {
    const lib = require('../../../lib') as typeof import('../../../lib');
    const { Test } = require('@nestjs/testing') as typeof import('@nestjs/testing'); // after resetModules: the same @nestjs/core as lib
    const moduleRef = await Test.createTestingModule({ imports: [lib.CeleryModule.forRoot({})] }).compile();
    await moduleRef.init();
    await expect(moduleRef.get(lib.CeleryHealth).isHealthy()).resolves.toBe(true);
    expect(moduleRef.get(lib.CELERY_METRICS)).toBeNull();
    await moduleRef.close();
    expect(loaded).toEqual([]);
  });

  it('metrics.enabled without prom-client installed fails the startup naming the option and the package', async () => {
    const lib = require('../../../lib') as typeof import('../../../lib');
    const { Test } = require('@nestjs/testing') as typeof import('@nestjs/testing');
    const compiling = Test.createTestingModule({ imports: [lib.CeleryModule.forRoot({ metrics: { enabled: true } })] }).compile();
    await expect(compiling).rejects.toThrow(/metrics\.enabled.*prom-client/);
    expect(loaded).toEqual(['prom-client']);
  });
});
