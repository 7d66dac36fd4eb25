"""What a segmentation becomes: the output-kinds table (`kinds`), the files each kind writes per
image and merges per job (`coco`, `labelling`), and the JSON bodies of /segment and /cam
(`bodies`). Pure functions of engine results: nothing here knows the job store, the storage
layout or the web framework."""
