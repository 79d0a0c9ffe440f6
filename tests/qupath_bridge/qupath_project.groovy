// A QuPath project made and changed by QuPath's own classes, as QuPath's "Create project", "Add images" and
// "Save" do (qupath-core v0.6.0: Projects.createProject, ImageServerProvider, Project.addImage, saveImageData).
//   qupath-groovy qupath_project.groovy create PROJECT_DIR SLIDE [ANNOTATION...]
//       a new project holding SLIDE, opened through the image server QuPath prefers for it (OpenSlide for .svs)
//   qupath-groovy qupath_project.groovy add PROJECT_DIR IMAGE_NAME [ANNOTATION...]
//       adds annotations to an image of an existing project and saves it
// ANNOTATION: "points|CLASS|NAME|x,y;x,y..." or "polygon|CLASS|NAME|x,y;x,y;..." (NAME may be empty).
import java.awt.image.BufferedImage
import qupath.lib.images.servers.ImageServerProvider
import qupath.lib.objects.PathObjects
import qupath.lib.objects.classes.PathClass
import qupath.lib.projects.ProjectIO
import qupath.lib.projects.Projects
import qupath.lib.regions.ImagePlane
import qupath.lib.roi.ROIs

Class.forName('qupath.lib.images.servers.ImageServers')  // before ProjectIO.loadProject in plain Groovy

def annotation(String spec) {
    def (kind, className, name, coordinates) = spec.split('\\|', -1) as List
    def xy = coordinates.split(';').collect { it.split(',')*.toDouble() }
    double[] x = xy*.getAt(0), y = xy*.getAt(1)
    def roi = kind == 'points' ? ROIs.createPointsROI(x, y, ImagePlane.getDefaultPlane())
            : ROIs.createPolygonROI(x, y, ImagePlane.getDefaultPlane())
    def object = PathObjects.createAnnotationObject(roi, PathClass.fromString(className))
    if (name)
        object.setName(name)
    object
}

def (command, folder, target) = args[0..2]
def project, entry
if (command == 'create') {
    def directory = new File(folder).absoluteFile
    directory.mkdirs()
    project = Projects.createProject(directory, BufferedImage)
    def support = ImageServerProvider.getPreferredUriImageSupport(BufferedImage, new File(target).toURI().toString())
    entry = project.addImage(support.builders[0])
    entry.setImageName(new File(target).name)
} else {
    project = ProjectIO.loadProject(new File(folder, 'project.qpproj'), BufferedImage)
    entry = project.imageList.find { it.imageName == target }
}
def imageData = entry.readImageData()
args.drop(3).each { imageData.hierarchy.addObject(annotation(it)) }
entry.saveImageData(imageData)
project.syncChanges()
println "${command}: ${entry.imageName} (${imageData.server.serverType}), ${imageData.hierarchy.annotationObjects.size()} annotation(s)"
