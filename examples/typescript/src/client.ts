// A urql client for jobgraph: queries and mutations over HTTP as persisted documents,
// subscriptions over a websocket with graphql-ws.
import { Client, fetchExchange, subscriptionExchange } from '@urql/core';
import type { DocumentNode } from 'graphql';
import { persistedExchange } from '@urql/exchange-persisted';
import { createClient as createWsClient } from 'graphql-ws';
import WebSocket from 'ws';
import * as generated from './gql/graphql.js';
import persistedDocuments from './gql/persisted-documents.json' with { type: 'json' };

/** A document as GraphQL Code Generator writes it with `persistedDocuments`. */
type Persisted = DocumentNode & { __meta__?: { hash?: string } };

const texts: Record<string, string> = persistedDocuments;

/** The document's id in persisted-documents.json, as the hex SHA-256 the server expects. */
function hashOf(document: Persisted): string {
  const hash = document.__meta__?.hash;
  if (!hash) throw new Error('a document without a hash: run `npm run codegen`');
  return hash.replace(/^sha256:/, '');
}

// The text a document is sent as, when it is sent, must be the one its hash was made from:
// the server checks that (automatic persisted queries) or runs only that exact text (trusted
// documents). urql sends `document.loc.source.body` when a document has one, so each
// generated document gets the text persisted-documents.json holds for it. urql's
// cacheExchange rewrites documents (it adds `__typename`), which would change that text:
// this client has no document cache, it reads fresh data and follows jobs by subscription.
for (const value of Object.values(generated)) {
  const document = value as Persisted;
  if (document?.kind !== 'Document' || !document.__meta__?.hash) continue;
  const body = texts[document.__meta__.hash];
  if (body === undefined) throw new Error('persisted-documents.json is stale: run `npm run codegen`');
  Object.assign(document, {
    loc: {
      start: 0,
      end: body.length,
      source: { body, name: 'persisted', locationOffset: { line: 1, column: 1 } },
    },
  });
}

/** A client of the jobgraph server at `url` (http://host:port), with an API token. */
export function connect(url: string, token: string): { client: Client; close: () => Promise<void> } {
  const ws = createWsClient({
    url: `${url.replace(/^http/, 'ws')}/graphql`,
    webSocketImpl: WebSocket,
    connectionParams: { authorization: `Bearer ${token}` },
  });
  const client = new Client({
    url: `${url}/graphql`,
    fetchOptions: { headers: { authorization: `Bearer ${token}` } },
    requestPolicy: 'network-only',
    exchanges: [
      // A query or mutation first goes as its hash alone (a query by GET); a server that does
      // not know it answers PersistedQueryNotFound and it is sent again with its text.
      persistedExchange({
        enableForMutation: true,
        generateHash: async (_text, document) => hashOf(document as Persisted),
      }),
      // A subscription goes over the websocket with its text (graphql-ws sends none without
      // it): the text persisted-documents.json holds, which a trusted-documents server runs.
      subscriptionExchange({
        forwardSubscription: (request) => ({
          subscribe: (sink) => ({
            unsubscribe: ws.subscribe({ ...request, query: request.query ?? '' }, sink),
          }),
        }),
      }),
      fetchExchange,
    ],
  });
  return {
    client,
    close: async () => {
      await ws.dispose();
    },
  };
}
