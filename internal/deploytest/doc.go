// Package deploytest holds tests over the deployment artefacts (template.yaml,
// events/) that are not Go code themselves.
package deploytest

import _ "go.yaml.in/yaml/v3" // read template.yaml in tests
