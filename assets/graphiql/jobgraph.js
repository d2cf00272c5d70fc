// Starts GraphiQL on jobgraph's /graphql page. Everything comes from this server: queries and
// mutations go over HTTP POST, subscriptions over a graphql-transport-ws websocket.
//
// The token is entered once, in the Headers tab (`{"Authorization": "Bearer jg_..."}`). GraphiQL
// keeps the headers in the browser's local storage and sends them with every HTTP request; the
// websocket sends the same Authorization in its `connection_init` payload, and a changed
// Authorization opens a new connection.
(function () {
  'use strict';

  var url = window.location.origin + window.location.pathname;
  var wsUrl = url.replace(/^http/, 'ws');

  var DEFAULT_QUERY = [
    '# Put your token in the Headers tab below: {"Authorization": "Bearer jg_..."}.',
    '# Ctrl-Enter runs the operation under the cursor; subscriptions stream their events here.',
    '',
    '{',
    '  viewer {',
    '    isAuthenticated',
    '    user { email }',
    '    workspaces(first: 10) { edges { node { id name } } }',
    '  }',
    '}',
    '',
  ].join('\n');

  // The headers to send: an Authorization without a token ("Bearer ", as prefilled) is left
  // out, so the page works anonymously until a token is typed.
  function withoutBlankAuthorization(headers) {
    var out = {};
    Object.keys(headers || {}).forEach(function (name) {
      var value = headers[name];
      if (name.toLowerCase() === 'authorization' && /^\s*(bearer)?\s*$/i.test(String(value))) {
        return;
      }
      out[name] = value;
    });
    return out;
  }

  function authorizationOf(headers) {
    var name = Object.keys(headers).find(function (key) {
      return key.toLowerCase() === 'authorization';
    });
    return name === undefined ? null : String(headers[name]);
  }

  var socket = null; // { authorization, client }

  function websocketFor(headers) {
    var authorization = authorizationOf(headers);
    if (socket && socket.authorization === authorization) return socket.client;
    if (socket) socket.client.dispose();
    var client = graphqlWs.createClient({
      url: wsUrl,
      connectionParams: authorization === null ? {} : { Authorization: authorization },
    });
    socket = { authorization: authorization, client: client };
    return client;
  }

  // Parsed here rather than taken from GraphiQL's `documentAST`, which follows the editor with
  // a delay and may still be the previous document.
  function isSubscription(params) {
    var graphql = GraphiQL.GraphQL;
    try {
      var operation = graphql.getOperationAST(graphql.parse(params.query), params.operationName);
      return Boolean(operation) && operation.operation === 'subscription';
    } catch (error) {
      return false; // the server reports the syntax error
    }
  }

  var overHttp = GraphiQL.createFetcher({ url: url });

  function fetcher(params, options) {
    var headers = withoutBlankAuthorization(options && options.headers);
    var forHttp = Object.assign({}, options, { headers: headers });
    if (isSubscription(params)) {
      return websocketFor(headers).iterate(params);
    }
    return overHttp(params, forHttp);
  }

  ReactDOM.createRoot(document.getElementById('graphiql')).render(
    React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultQuery: DEFAULT_QUERY,
      defaultHeaders: '{\n  "Authorization": "Bearer "\n}',
      isHeadersEditorEnabled: true,
      shouldPersistHeaders: true,
      defaultEditorToolsVisibility: 'headers',
    }),
  );
})();
