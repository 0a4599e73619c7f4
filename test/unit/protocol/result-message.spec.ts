import { decodeResultMessage, encodeResultMessage } from '../../../lib/protocol/result-row';

describe("result messages (Celery's rpc result body)", () => {
  it('writes the rpc backend body of wire spec §3.4', () => {
    const body = encodeResultMessage({ taskId: '6d3c1c9e-8c7a-4e0f-9a47-2a1b5e6f7d80', status: 'SUCCESS', result: 'Astra DB is my powerful results storage yay' });
    expect(body.toString()).toBe(
      '{"task_id": "6d3c1c9e-8c7a-4e0f-9a47-2a1b5e6f7d80", "status": "SUCCESS", "result": "Astra DB is my powerful results storage yay", "traceback": null, "children": []}',
    );
  });

  it('reads it back as task meta, exceptions included', () => {
    const exc = { exc_type: 'ValueError', exc_message: ['bad'], exc_module: 'builtins' };
    const meta = decodeResultMessage(encodeResultMessage({ taskId: 't', status: 'FAILURE', result: exc, traceback: 'Traceback...' }));
    expect(meta).toEqual({ taskId: 't', status: 'FAILURE', result: exc, traceback: 'Traceback...', children: [], dateDone: null });
  });

  it('refuses a body without task_id and status', () => {
    expect(() => decodeResultMessage(Buffer.from('{"status": "SUCCESS"}'))).toThrow(TypeError);
  });
});
