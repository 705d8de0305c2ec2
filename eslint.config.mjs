// Lint for the TypeScript library, its tests, the bench, the examples and the scripts (flat
// config). `npm run lint` runs it with `prettier --check`; .ci/run fails on any finding.
import js from '@eslint/js';
import prettier from 'eslint-config-prettier';
import globals from 'globals';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/', 'build*/', 'prebuilds/', 'node_modules/', 'native/', 'coverage/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { globals: { ...globals.node } },
    rules: {
      // `_`-prefixed names are deliberately unused (placeholders in signatures and destructuring).
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' },
      ],
      eqeqeq: ['error', 'always'],
      'prefer-const': 'error',
      // Best-effort cleanup (kill a child that may be gone, remove a file that may be) is common here.
      'no-empty': ['error', { allowEmptyCatch: true }],
    },
  },
  {
    // socket.io-adapter types its namespace, packets and acks as `any`; the adapter mirrors it.
    files: ['lib/socket.io/**/*.ts'],
    rules: { '@typescript-eslint/no-explicit-any': 'off' },
  },
  {
    files: ['**/*.cjs'],
    languageOptions: { sourceType: 'commonjs' },
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
  prettier,
);
