// ESLint flat config. Syntax-only (no type information) so `npm run lint` stays fast.
import { defineConfig, globalIgnores } from 'eslint/config';
import tseslint from 'typescript-eslint';

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
