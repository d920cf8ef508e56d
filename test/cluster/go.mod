module github.com/intel-gpu-cdi/intel-gpu-cdi/test/cluster

go 1.26.0

require (
	github.com/intel-gpu-cdi/intel-gpu-cdi v0.0.0-00010101000000-000000000000
	google.golang.org/grpc v1.85.0
	k8s.io/kubelet v0.37.2
	sigs.k8s.io/yaml v1.6.0
)

require (
	go.yaml.in/yaml/v2 v2.4.4 // indirect
	golang.org/x/net v0.61.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
	golang.org/x/text v0.43.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260817212433-ac3dfec99bb1 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)

replace github.com/intel-gpu-cdi/intel-gpu-cdi => ../..
