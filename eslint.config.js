// ESLint flat config. Syntax-only (no type information) so `npm run lint` stays fast.
import { defineConfig, globalIgnores } from 'eslint/config';
import tseslint from 'typescript-eslint';

// The engines (src/engines) are a small library the app uses, never the reverse: no import
// of Fastify or of app code from there (docs/adr/0004-engines-and-app.md). Relative paths
// leaving src/engines depend on a file's depth, so there is one block per depth.
const ENGINE_FRAMEWORK_IMPORTS = {
  group: ['fastify', 'fastify/*', 'fastify-plugin', '@fastify/*'],
  message: 'The engines know nothing of Fastify: throw a typed error and let the app map it (src/errors.ts).',
};
const engineBoundary = [1, 2, 3, 4].map((depth) => ({
  files: [`src/engines/${'*/'.repeat(depth - 1)}*.ts`],
  rules: {
    'no-restricted-imports': ['error', {
      patterns: [
        ENGINE_FRAMEWORK_IMPORTS,
        {
          group: [`${'../'.repeat(depth)}**`],
          message: 'An engine imports only from src/engines (and packages): move the shared code into the engines, or pass it in.',
        },
      ],
    }],
  },
}));

export default defineConfig([
  globalIgnores(['dist/', 'node_modules/', 'coverage/', '.tap/', 'bench/results/']),

  {
    files: ['**/*.{ts,mts,cts,js,mjs,cjs}'],
    extends: [tseslint.configs.recommended],
    rules: {
      '@typescript-eslint/no-unused-vars': [
        'error',
        {
          argsIgnorePattern: '^_',
          varsIgnorePattern: '^_',
          caughtErrorsIgnorePattern: '^_',
          destructuredArrayIgnorePattern: '^_',
        },
      ],
    },
  },

  ...engineBoundary,
  // Service code logs through Fastify's logger (app.log / request.log), never console.log.
  // bench/ and the CLI (src/cli.ts) print to the terminal on purpose, so they are not covered.
  {
    files: ['src/**', 'plugins/**', 'routes/**'],
    ignores: ['src/cli.ts'],
    rules: {
      'no-restricted-properties': [
        'error',
        {
          object: 'console',
          property: 'log',
          message: 'Use the Fastify logger (app.log / request.log) instead of console.log.',
        },
      ],
    },
  },
]);
