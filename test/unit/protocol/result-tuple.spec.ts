import { parseChildren, parseResultTuple } from '../../../lib/protocol/result-tuple';

/** Celery's result tuples as its rows carry them (wire spec §3.2 "Children", §8.6). */
describe('result tuples', () => {
  it("reads a chain step's child [[id, null], null] as a task without parent", () => {
    expect(parseChildren([[['a1b2c3d4-0000-4000-8000-000000000002', null], null]], 't')).toEqual([
      { id: 'a1b2c3d4-0000-4000-8000-000000000002', parent: null, results: null },
    ]);
  });

  it('reads a parent tuple nested in the head, as AsyncResult.as_tuple() writes it for a chain', () => {
    expect(parseResultTuple([['step2', [['step1', null], null]], null])).toEqual({
      id: 'step2',
      parent: { id: 'step1', parent: null, results: null },
      results: null,
    });
  });

  it('reads a group tuple [[group_id, null], [members]] with its members', () => {
    expect(parseResultTuple([['g1', null], [[['m1', null], null], [['m2', null], null]]])).toEqual({
      id: 'g1',
      parent: null,
      results: [
        { id: 'm1', parent: null, results: null },
        { id: 'm2', parent: null, results: null },
      ],
    });
  });

  it('accepts a bare id as the head, as result_from_tuple does', () => {
    expect(parseResultTuple(['t9', null])).toEqual({ id: 't9', parent: null, results: null });
  });

  it('keeps null children null (a REVOKED row written without a request) and [] empty', () => {
    expect(parseChildren(null, 't')).toBeNull();
    expect(parseChildren([], 't')).toEqual([]);
  });

  it('says what is wrong with a malformed children column', () => {
    expect(() => parseChildren({ id: 'x' }, 't7')).toThrow('task t7: children is not a list of result tuples ({"id":"x"})');
    expect(() => parseChildren([['x']], 't7')).toThrow('task t7: child 0: expected [[id, parent], null | [members]], got ["x"]');
    expect(() => parseChildren([[[42, null], null]], 't7')).toThrow('task t7: child 0: the id is not a non-empty string (42)');
    expect(() => parseChildren([[['g', null], 'm']], 't7')).toThrow('task t7: child 0: the members of g are neither null nor a list ("m")');
    expect(() => parseResultTuple([['c', [['p']]], null])).toThrow('parent of c: expected [[id, parent], null | [members]], got [["p"]]');
  });
});
