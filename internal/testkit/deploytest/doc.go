// Package deploytest holds tests over the deployment artefacts (template.yaml,
// events/) that are not Go code themselves.
package deploytest
