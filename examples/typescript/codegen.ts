import type { CodegenConfig } from '@graphql-codegen/cli';

// Types for the operations in src/ from the server's schema, and persisted-documents.json:
// the hash and text of each operation, which the server runs alone with --trusted-documents.
const config: CodegenConfig = {
  schema: '../../schema.graphql',
  documents: ['src/**/*.ts', '!src/gql/**/*'],
  generates: {
    './src/gql/': {
      preset: 'client',
      presetConfig: {
        fragmentMasking: false,
        persistedDocuments: { hashAlgorithm: 'sha256' },
      },
      config: {
        enumsAsTypes: true,
        // Imports with `.js`, as Node's ES modules need.
        emitLegacyCommonJSImports: false,
        useTypeImports: true,
        scalars: {
          DateTime: 'string',
          JSON: 'unknown',
          ByteCount: 'number',
          Upload: 'Blob',
        },
      },
    },
  },
  ignoreNoDocuments: false,
};

export default config;
